import sys

from verl_recipes.cpu import main

sys.exit(main())
