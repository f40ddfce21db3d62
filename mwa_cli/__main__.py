import sys

from mwa_cli.errors import EXIT_SIGINT

try:
    from mwa_cli.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads (a training process just started): no traceback
    sys.exit(EXIT_SIGINT)

main()
