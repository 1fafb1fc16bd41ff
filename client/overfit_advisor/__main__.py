"""``python -m overfit_advisor agent ...`` (the ``overfit-advisor`` command)."""

import sys
from collections.abc import Sequence

COMMANDS = {"agent": "run a project's verification trials with your own training script"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        listed = "\n".join(f"  {name}  {what}" for name, what in COMMANDS.items())
        print(f"usage: overfit-advisor COMMAND ...\ncommands:\n{listed}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    # Imported here: ``import overfit_advisor`` in a training script never loads the agent.
    from overfit_advisor import agent

    return agent.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
