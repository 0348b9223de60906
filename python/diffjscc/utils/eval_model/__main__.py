import sys

from diffjscc.eval import main

sys.exit(main())
