//! Finds the line of a key path in YAML text, so errors found after serde
//! (which keeps no positions for values) can still name a line.

/// 1-based line of the key at `path` (e.g. `["web", "listen"]`); list items
/// are searched in order, so `["scrape_configs", "job_name"]` finds the
/// first. `None` if the key is not written in the file.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut depth = 0;
    let mut min_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if let Some(m) = min_indent {
            if indent < m && depth > 0 {
                // Left the block we were searching in.
                return None;
            }
        }
        let key = content.trim_start_matches("- ");
        let key = key
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        if key == path[depth] && content.contains(':') {
            depth += 1;
            if depth == path.len() {
                return Some(i + 1);
            }
            min_indent = Some(indent + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys() {
        let text =
            "global:\n  scrape_interval: 15s\nweb:\n  # c\n  listen: x\nstorage:\n  path: d\n";
        assert_eq!(line_of(text, &["web", "listen"]), Some(5));
        assert_eq!(line_of(text, &["storage", "path"]), Some(7));
        assert_eq!(line_of(text, &["storage", "listen"]), None);
        assert_eq!(line_of(text, &["global"]), Some(1));
    }
}
