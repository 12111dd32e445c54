import sys

from canary.cli.parser import main

sys.exit(main())
