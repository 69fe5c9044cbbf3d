"""Environment settings of a service that follows the live settings file.

The live settings (``pulsestream.spec.StreamSpec``) are declared once, in the
spec. A service takes the ones it uses from its environment too, as the
*defaults* of the file: ``GENERATOR_FREQUENCY`` is the frequency until the
file says otherwise. Such a field is declared with :func:`live`, which copies
the spec field's bounds, default and description (the type annotation must
be the spec's, checked when the class is made), so the environment can never
accept a value the file would refuse, nor default to another one::

    class GeneratorSettings(LiveEnvSettings):
        env_prefix = "GENERATOR_"
        frequency: Duration = live("frequency")

Guarantees of :class:`LiveEnvSettings`:

- :meth:`~LiveEnvSettings.base_spec` is a valid ``StreamSpec``: the
  environment's live values over the spec's defaults, checked by the spec's
  cross-field rules when the settings are built, so a bad combination stops
  the service at start with one line naming the variables (and exit status 2
  from the console scripts), as a bad single value does;
- ``PULSESTREAM_SETTINGS_FILE`` is declared here, once, for every service
  that watches the file.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import Field, model_validator

from pulsestream.envsettings import Conflict, EnvSettings, field_extra
from pulsestream.spec import SpecError, StreamSpec, field_at, parse_spec

#: Key in a field's ``json_schema_extra`` holding the spec path it is the default of.
LIVE = "live"


def live(path: str, description: str | None = None) -> Any:
    """A field holding the environment's default for the live setting at ``path`` (``bufferSize``, ``rateLimit.burst``).

    Bounds, default and validators are the spec field's. The description is
    the spec field's, or ``description`` when the setting means something
    particular to this service, followed by ``(live: PATH)``.
    """
    spec_field = field_at(path)
    text = (description or spec_field.description or "").rstrip(".")
    default: dict[str, Any] = (
        {"default_factory": spec_field.default_factory}
        if spec_field.default_factory is not None
        else {"default": spec_field.default}
    )
    info: Any = Field(**default, description=f"{text} (live: {path}).", json_schema_extra={LIVE: path})
    info.metadata = list(spec_field.metadata)  # the bounds and validators (e.g. unique series names)
    return info


class LiveEnvSettings(EnvSettings):
    """Base of the generator's and the streamer's settings: the file's path and its defaults."""

    shared_fields: ClassVar[tuple[str, ...]] = ("settings_file", "log_level", "log_format")

    settings_file: str = Field(
        default="",
        description="Live settings file (JSON or YAML, the shape of a StreamConfig spec) watched for changes; "
        "empty = none.",
        json_schema_extra={"env": "PULSESTREAM_SETTINGS_FILE"},
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, path in cls.live_fields().items():
            declared, expected = cls.model_fields[name].annotation, field_at(path).annotation
            if declared != expected:
                raise TypeError(
                    f"{cls.__name__}.{name} is declared {declared}, but the live setting {path} is {expected}"
                )

    @classmethod
    def live_fields(cls) -> dict[str, str]:
        """``{field: spec path}`` of the fields declared with :func:`live`."""
        return {
            name: str(field_extra(info)[LIVE]) for name, info in cls.model_fields.items() if LIVE in field_extra(info)
        }

    def base_spec(self) -> StreamSpec:
        """The live settings in force until a settings file says otherwise."""
        return parse_spec(self._live_document())

    def _live_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name, path in self.live_fields().items():
            *parents, last = path.split(".")
            node = document
            for part in parents:
                node = node.setdefault(part, {})
            value = getattr(self, name)
            node[last] = list(value) if isinstance(value, list) else value
        return document

    @model_validator(mode="after")
    def _obey_the_spec_rules(self) -> Self:
        try:
            self.base_spec()
        except SpecError as error:
            fields = {path: name for name, path in self.live_fields().items()}
            raise Conflict(
                [
                    ([fields[path] for path in problem.fields if path in fields], problem.reason, problem.message)
                    for problem in error.problems
                ]
            ) from None
        return self
