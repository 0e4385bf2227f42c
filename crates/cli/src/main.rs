//! The `peregrine` command-line tool. Subcommands only parse flags and dispatch; errors
//! print as one line (`peregrine: error: ...`) with a non-zero exit, never a backtrace.

mod args;
mod cmd_bench;
mod cmd_generate;
mod cmd_ppl;
mod cmd_quantize;
mod cmd_tokens;
mod device;
mod load;

use clap::Parser;

use args::{Cli, Command};

fn main() {
    install_panic_line();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_clap_error(e),
    };
    let result = match cli.command {
        Command::Generate(a) => cmd_generate::run(a),
        Command::Tokenize(a) => cmd_tokens::tokenize(a),
        Command::Detokenize(a) => cmd_tokens::detokenize(a),
        Command::Logits(a) => cmd_tokens::logits(a),
        Command::Ppl(a) => cmd_ppl::run(a),
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::Bench(a) => cmd_bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("peregrine: error: {e}");
        std::process::exit(1);
    }
}

/// Help and version print as clap renders them; a usage error prints its first line only.
fn exit_on_clap_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        e.exit();
    }
    let text = e.render().to_string();
    let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    eprintln!("peregrine: error: {} (see --help)", message.trim_start_matches("error: "));
    std::process::exit(2);
}

/// A bug must still end in one line, not a backtrace.
fn install_panic_line() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("peregrine: internal error: {msg}{at} (please report it)");
    }));
}
