from mwa_cli.cli import main

main()
