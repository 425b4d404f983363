//! Summary templates: `{{counter}} is {{value}}, above {{threshold}}`.
//!
//! Deliberately tiny: placeholders only, no logic, so a summary always
//! renders and a typo is caught when the rules are loaded, not at 3 a.m.

use std::collections::BTreeMap;

/// A checked template: literal text and field names, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses a template whose placeholders must be among `fields`.
    pub fn parse(source: &str, fields: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!(
                    "`{{{{` at byte {} is not closed with `}}}}`",
                    source.len() - rest.len() + start
                )
            })?;
            let name = after[..end].trim();
            if !fields.iter().any(|field| field == name) {
                return Err(format!(
                    "{{{{{name}}}}} is not a field of this rule; it has {}",
                    fields
                        .iter()
                        .map(|f| format!("{{{{{f}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            parts.push(Part::Field(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Renders with the fields' values; a field without one renders empty.
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(name) => out.push_str(values.get(name).map_or("", String::as_str)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<String> {
        ["counter", "value", "labels.team"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn renders_fields_and_text() {
        let t = Template::parse("{{counter}} is {{ value }} ({{labels.team}})", &fields()).unwrap();
        let values = BTreeMap::from([
            ("counter".to_owned(), "bids".to_owned()),
            ("value".to_owned(), "7".to_owned()),
        ]);
        assert_eq!(t.render(&values), "bids is 7 ()");
    }

    #[test]
    fn names_an_unknown_field_and_the_known_ones() {
        let error = Template::parse("{{countr}} high", &fields()).unwrap_err();
        assert!(error.contains("{{countr}} is not a field"), "{error}");
        assert!(error.contains("{{counter}}"), "{error}");
        let error = Template::parse("x {{value", &fields()).unwrap_err();
        assert!(error.contains("not closed"), "{error}");
    }
}
