from vestis.cli import main

main()
