from paramreuse.cli import main

main()
