"""The command line's verbs, by group: each module declares its verbs' arguments (`add_*`, given the
subparsers) and holds their handlers; `options` holds what several verbs share, `recipes` reads
`--config FILE.toml`. `aiayn.cli` only builds the parser from these and dispatches."""
