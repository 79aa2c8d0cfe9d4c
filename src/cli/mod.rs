//! clap definitions and one runner per subcommand.
