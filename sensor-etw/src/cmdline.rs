//! Windows command lines to argv, by the rules of CommandLineToArgvW and
//! the MSVC runtime (learn.microsoft.com, "Parsing C command-line
//! arguments"), so argv reads like the Linux sensor's.

/// Splits a command line. The program name ends at the first unquoted
/// whitespace and takes no backslash escapes; later arguments follow the
/// 2n / 2n+1 backslash rules, and `""` inside quotes is a literal quote.
#[must_use]
pub fn split(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut argv = Vec::new();
    let mut i = 0;
    // Program name.
    let mut prog = String::new();
    let mut quoted = false;
    while let Some(&c) = chars.get(i) {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted && (c == ' ' || c == '\t') {
            break;
        } else {
            prog.push(c);
        }
        i += 1;
    }
    if chars.is_empty() {
        return argv;
    }
    argv.push(prog);
    loop {
        while matches!(chars.get(i), Some(' ' | '\t')) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.get(i) {
            match c {
                '\\' => {
                    let start = i;
                    while chars.get(i) == Some(&'\\') {
                        i += 1;
                    }
                    let n = i - start;
                    if chars.get(i) == Some(&'"') {
                        arg.extend(std::iter::repeat_n('\\', n / 2));
                        if n % 2 == 1 {
                            arg.push('"');
                            i += 1;
                        }
                    } else {
                        arg.extend(std::iter::repeat_n('\\', n));
                    }
                    continue;
                }
                '"' => {
                    if quoted && chars.get(i + 1) == Some(&'"') {
                        arg.push('"');
                        i += 1;
                    } else {
                        quoted = !quoted;
                    }
                }
                ' ' | '\t' if !quoted => break,
                _ => arg.push(c),
            }
            i += 1;
        }
        argv.push(arg);
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_command_line_to_argv() {
        assert_eq!(
            split(r#""C:\Program Files\app.exe" -x "a b" c\d"#),
            vec![r"C:\Program Files\app.exe", "-x", "a b", r"c\d"]
        );
        assert_eq!(
            split(r#"cmd.exe /c "echo \"hi\"""#),
            vec!["cmd.exe", "/c", r#"echo "hi""#]
        );
        assert_eq!(
            split(r#"a.exe \\\\"x y" \\\"z"#),
            vec!["a.exe", r"\\x y", r#"\"z"#]
        );
        assert_eq!(split(r#"a.exe "say ""hi""""#), vec!["a.exe", r#"say "hi""#]);
        assert_eq!(split("notepad.exe"), vec!["notepad.exe"]);
        // A leading space makes the program name empty, as in CommandLineToArgvW.
        assert_eq!(split("  x.exe   y  "), vec!["", "x.exe", "y"]);
        assert!(split("").is_empty());
    }
}
