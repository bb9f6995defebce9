"""``python -m deepspark`` runs the command line."""

from deepspark.cli.main import main

if __name__ == "__main__":
    main()
