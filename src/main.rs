//! qrescue's entry point: parse the command line, set up logging, dispatch, and map errors to the
//! documented exit codes (README.md, "Exit codes").

fn main() {
    std::process::exit(qrescue::cli::main_entry());
}
