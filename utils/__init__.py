"""What every layer uses: one-line errors and warnings (errors), files written atomically (atomic),
reading TensorBoard event files (events), and what MXNet 1.9.1 needs from today's machines before it
is imported (mxnet_compat). Imports nothing of the project above it."""
