"""Publishing: model cards and Hub folders (validation, one-commit push)."""
