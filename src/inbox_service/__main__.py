from inbox_service.cli import main

main()
