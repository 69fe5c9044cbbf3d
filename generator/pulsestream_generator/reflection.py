"""Server reflection as both ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection serves only ``v1alpha``, which grpcurl 1.8 speaks; current
grpcurl, Postman and grpcui ask for ``v1`` first. The two services are the
same protocol under two package names (v1 is v1alpha promoted, field for
field), so the v1 service here is the library's own servicer behind the v1
method path, and v1's descriptor is derived from v1alpha's at start-up by
renaming the package, so a client can describe it too; no .proto is copied.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["SERVICE_NAMES", "V1_SERVICE_NAME", "enable"]

_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{_V1}.ServerReflection"
#: The reflection services themselves, as they appear in a service list.
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return  # registered already (another server in this process)
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = _V1
    old, new = f".{_V1ALPHA}.", f".{_V1}."
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # proto2: assigning even "" would mark a scalar as typed
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(file)


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (plus both reflection services) on ``server``."""
    names = (*service_names, *SERVICE_NAMES)
    reflection.enable_server_reflection(names, server)
    _register_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
