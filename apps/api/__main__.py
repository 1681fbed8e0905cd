"""`python -m apps.api`, as the docs have it: the command is `crew-api` (apps.cli.api)."""

if __name__ == "__main__":
    from apps.cli.api import main

    main()
