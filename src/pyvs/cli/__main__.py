import sys

from pyvs.cli import main

sys.exit(main())
