from inbox_service.cli import main

# Guarded: multiprocessing's forkserver re-imports the main module in its children.
if __name__ == "__main__":
    main()
