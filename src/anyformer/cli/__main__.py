"""`python -m anyformer.cli`, as the module was run before it became a package."""
from anyformer.cli import main

main()
