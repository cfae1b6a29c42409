//! Command-line handling shared by the capture generators `gen_crowd` and `gen_chatter`:
//! whole numbers, then the output file.

/// The whole numbers named by `names`, then the output path. `--help` prints `usage` and
/// exits 0; a wrong count prints it and exits 2; a word that is not a number is an error
/// naming it.
pub fn numbers_then_path(usage: &str, names: &[&str]) -> Result<(Vec<u64>, String), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    if help || args.len() != names.len() + 1 {
        eprintln!("{usage}");
        std::process::exit(if help { 0 } else { 2 });
    }
    let numbers = names
        .iter()
        .zip(&args)
        .map(|(what, a)| {
            a.parse()
                .map_err(|_| format!("{what} '{a}' is not a whole number\n{usage}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((numbers, args[names.len()].clone()))
}
