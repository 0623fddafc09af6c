"""``python -m supervisor``: the k3s-supervisor command (how the supervisor starts its children)."""

from supervisor import cli

cli.main()
