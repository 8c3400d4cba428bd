from anyformer.cli import main

main()
