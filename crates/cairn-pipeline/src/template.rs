//! `${name}` templating in cairn.yaml values.

use indexmap::IndexMap;
use serde_json::Value;

/// Where `${name}` looks, in order: the foreach/matrix item, `vars`, the root params.yaml.
#[derive(Clone)]
pub struct Context<'a> {
    pub vars: &'a IndexMap<String, Value>,
    pub params: &'a Value,
    /// `item`, `key` for generated stages.
    pub item: Vec<(String, Value)>,
    /// Names left as written when nothing defines them (`item` and `out` of datum stages,
    /// filled in per datum).
    pub keep: &'a [&'a str],
}

impl Context<'_> {
    fn lookup(&self, name: &str) -> Option<Value> {
        let mut parts = name.split('.');
        let first = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        let start = self
            .item
            .iter()
            .find(|(k, _)| k == first)
            .map(|(_, v)| v)
            .or_else(|| self.vars.get(first))
            .or_else(|| self.params.get(first))?;
        walk(start, &rest).cloned()
    }
}

fn walk<'v>(mut value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    for part in path {
        value = match value {
            Value::Object(map) => map.get(*part)?,
            Value::Array(list) => list.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// How a value appears in text: strings as they are, numbers and booleans as written in
/// JSON, lists and maps as compact JSON.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Replaces every `${name}` in `text`.
pub fn render(text: &str, context: &Context<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
        let name = after[..end].trim();
        match context.lookup(name) {
            Some(value) => out.push_str(&scalar_text(&value)),
            None if context.keep.contains(&name.split('.').next().unwrap_or_default()) => {
                out.push_str(&rest[start..start + 2 + end + 1]);
            }
            None => {
                let mut known: Vec<&str> = context.item.iter().map(|(k, _)| k.as_str()).collect();
                known.extend(context.vars.keys().map(String::as_str));
                if let Value::Object(map) = context.params {
                    known.extend(map.keys().map(String::as_str));
                }
                let hint = crate::closest(name, known.into_iter())
                    .map(|best| format!(" (did you mean `{best}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "`${{{name}}}` is not defined in the foreach item, `vars` or params.yaml{hint}"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills in a datum's `${item...}` and `${out}` (left in place when the stage was built).
pub fn render_datum(text: &str, item: &str, out: &str) -> String {
    let name = item.rsplit('/').next().unwrap_or(item);
    let stem = match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    };
    text.replace("${item.name}", name)
        .replace("${item.stem}", stem)
        .replace("${item}", item)
        .replace("${out}", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_items_vars_and_params() {
        let vars: IndexMap<String, Value> = [("data".to_owned(), Value::from("raw"))].into_iter().collect();
        let params = serde_json::json!({"train": {"lr": 0.01, "layers": [8, 4]}});
        let context =
            Context { vars: &vars, params: &params, item: vec![("item".into(), Value::from(3))], keep: &[] };
        assert_eq!(
            render("x ${data} ${train.lr} ${train.layers.1} ${item} $${kept}", &context).unwrap(),
            "x raw 0.01 4 3 ${kept}"
        );
        let err = render("${trian.lr}", &context).unwrap_err();
        assert!(err.contains("did you mean `train`"), "{err}");
        let keep = ["item"];
        let datum = Context { keep: &keep, item: Vec::new(), ..context };
        assert_eq!(render("${item.stem}", &datum).unwrap(), "${item.stem}");
        assert_eq!(render_datum("f ${item} ${item.stem} ${out}", "a/b.png", "o"), "f a/b.png b o");
    }
}
