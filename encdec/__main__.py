"""``python -m encdec`` runs the command-line tool."""
import sys

from encdec.cli import main

sys.exit(main())
