"""What every layer uses: one-line errors (errors) and reading TensorBoard event files (events).
Imports nothing of the project above it."""
