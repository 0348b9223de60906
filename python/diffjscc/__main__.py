import sys

from diffjscc.cli import main

sys.exit(main())
