// Publishes three points with @grpc/grpc-js (the proto loaded at run time, as a Node service would), then
// tries a synthetic series' name to see the refusal. Prints one JSON line per call.
// Usage: node publish.mjs HOST:PORT PROTO_DIR SERIES
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [address, protoDir, series] = process.argv.slice(2);
const definition = protoLoader.loadSync("pulsestream/v1/ingest.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  defaults: true,
});
const { pulsestream } = grpc.loadPackageDefinition(definition);
const client = new pulsestream.v1.IngestService(address, grpc.credentials.createInsecure());

function publish(points) {
  return new Promise((resolve) => {
    client.Publish({ points }, { deadline: Date.now() + 10_000 }, (error, reply) =>
      resolve(error ? { code: error.code, details: error.details } : reply),
    );
  });
}

const now = Date.now() - 10;
const stamp = (ms) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 });
const points = [0, 1, 2].map((i) => ({ series, value: 10 + i, timestamp: stamp(now + i) }));
console.log(JSON.stringify(await publish(points)));
console.log(JSON.stringify(await publish(points))); // the same again: duplicates
console.log(JSON.stringify(await publish([{ series: "cpu", value: 1 }])));
client.close();
