from effigy.cli import main

main()
