//! Command-line helpers shared by the subcommands' option parsers.

/// Splits `--name=value` into the name and its inline value; any other
/// argument (a bare `--name`, a short option, a positional) comes back
/// whole, with `None`.
pub fn split(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

/// Sets the boolean option `name`, which takes no value.
pub fn flag(name: &str, inline: Option<&str>, set: &mut bool) -> Result<(), String> {
    if inline.is_some() {
        return Err(format!("`{name}` takes no value"));
    }
    *set = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_flag() {
        assert_eq!(split("--runs=3"), ("--runs", Some("3")));
        assert_eq!(split("--quick"), ("--quick", None));
        assert_eq!(split("a=b"), ("a=b", None));
        let mut b = false;
        assert!(flag("--quick", Some("1"), &mut b).is_err() && !b);
        assert!(flag("--quick", None, &mut b).is_ok() && b);
    }
}
