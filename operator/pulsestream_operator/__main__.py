"""``pulsestream-operator``: reconcile StreamConfigs, configured by ``OPERATOR_*`` variables.

Exit status 2 and one message when a setting is invalid, before any
connection is made.
"""

from __future__ import annotations

from pulsestream import logs
from pulsestream_operator.running import operate
from pulsestream_operator.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings.from_env_or_exit("pulsestream-operator")
    logs.configure(settings.log_level, settings.log_format, "pulsestream-operator")
    operate(settings)


if __name__ == "__main__":
    main()
