"""Code shared by the pulsestream services.

- ``pulsestream.v1``: the generated protocol (do not edit; ``make proto``).
- ``pulsestream.durations``: the ``Duration`` type used by every setting.
- ``pulsestream.spec``: the live settings model (a ``StreamConfig``'s spec).
- ``pulsestream.envsettings``: building a service's typed settings from the environment.
- ``pulsestream.logs``: log configuration shared by the services.
- ``pulsestream.refusals``: why the generator refused or ended a call (gRPC ErrorInfo reasons), for both sides.
"""

__version__ = "0.1.0"
