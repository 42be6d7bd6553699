"""Stage entry points: what each workflow script calls. One module per stage group."""
