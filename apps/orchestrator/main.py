"""`python -m apps.orchestrator.main`, as the docs have it: the command is `crew-task`
(apps.cli.task)."""

if __name__ == "__main__":
    from apps.cli.task import main

    main()
