//! Launch templates: a placeholder spliced into shell code. Placeholders in `command` are
//! rendered into their own argv entry, never through a shell, so `{zone}` or `{dir}` with a
//! space or a `;` stays one argument. A template that runs `sh -c "... {zone} ..."` undoes
//! that: the value becomes part of the script the shell parses, and a name with `;`, `$(...)`
//! or a space runs or splits. The way out keeps the value an argument: the words after the
//! script are its `$0`, `$1`, ...

use crate::render::placeholders_in;
use crate::{Group, Stack};

use super::Findings;

/// The shells whose `-c` takes a script (by the program's file name, any directory).
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh"];

pub(super) fn group(stack: &Stack, group: &Group, out: &mut Findings) {
    let Some(template) = stack.launch_template(&group.launch_template) else {
        return;
    };
    let Some(script) = shell_script(&template.command) else {
        return;
    };
    let names = placeholders_in(script);
    if names.is_empty() {
        return;
    }
    let shown: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
    out.warning(
        &format!("launch_templates.{}", template.name),
        format!(
            "the {} -c script interpolates {}: the value is parsed as shell code (a name with \
             ';' or a space would run or split); pass it as an argument after the script and \
             use \"$1\": [{}, -c, 'exec ... \"$1\"', {}, \"{}\"]",
            template.command[0],
            super::list(&shown),
            template.command[0],
            template.command[0],
            shown[0],
        ),
    );
}

/// The script of `command` when it is a shell given `-c` (also with other one-letter options
/// in the same word, `-ec`, or before it, `-e -c`): the first argument after the options.
fn shell_script(command: &[String]) -> Option<&str> {
    let (program, args) = command.split_first()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    if !SHELLS.contains(&name) {
        return None;
    }
    let mut has_c = false;
    for arg in args {
        match arg.strip_prefix('-') {
            Some(flags) if !flags.is_empty() && !flags.starts_with('-') => {
                has_c |= flags.contains('c');
            }
            _ => return has_c.then_some(arg.as_str()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::shell_script;

    fn script(command: &[&str]) -> Option<String> {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        shell_script(&command).map(str::to_string)
    }

    #[test]
    fn finds_the_script_of_a_shell_with_c() {
        assert_eq!(
            script(&["sh", "-c", "a {zone}"]).as_deref(),
            Some("a {zone}")
        );
        assert_eq!(script(&["/bin/sh", "-c", "x"]).as_deref(), Some("x"));
        assert_eq!(script(&["bash", "-ec", "x", "sh"]).as_deref(), Some("x"));
        assert_eq!(
            script(&["/usr/bin/bash", "-e", "-c", "x"]).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn no_script_without_a_shell_or_c() {
        assert_eq!(script(&["proxyfleet", "proxy", "-c", "{dir}"]), None);
        assert_eq!(script(&["sh", "{dir}/start.sh"]), None);
        assert_eq!(script(&["sh", "-e", "{dir}/start.sh"]), None);
        assert_eq!(script(&["sh"]), None);
        assert_eq!(script(&["fish", "-c", "x"]), None);
    }
}
