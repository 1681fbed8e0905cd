"""`python -m apps.api.keys`, as the docs have it: the command is `crew-keys` (apps.cli.keys)."""

if __name__ == "__main__":
    from apps.cli.keys import main

    main()
