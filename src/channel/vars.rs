//! Channel variables with Asterisk's inheritance prefixes: `_VAR` is copied once to channels
//! this one creates, `__VAR` forever. Reading `${VAR}` finds any of the three spellings.

/// Variables in insertion order (AMI Status / `core show channel` list them in order).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    items: Vec<(String, String, u8)>,
}

/// Split `__NAME` / `_NAME` into (NAME, inheritance level).
pub fn split_inherit(name: &str) -> (&str, u8) {
    if let Some(n) = name.strip_prefix("__") {
        (n, 2)
    } else if let Some(n) = name.strip_prefix('_') {
        (n, 1)
    } else {
        (name, 0)
    }
}

impl Vars {
    pub fn get(&self, name: &str) -> Option<&str> {
        let (n, _) = split_inherit(name);
        self.items
            .iter()
            .find(|(k, _, _)| k == n)
            .map(|(_, v, _)| v.as_str())
    }
    /// Set (an empty value still sets; use `remove` to unset).
    pub fn set(&mut self, name: &str, value: &str) {
        let (n, level) = split_inherit(name);
        if let Some(e) = self.items.iter_mut().find(|(k, _, _)| k == n) {
            e.1 = value.to_string();
            e.2 = level;
        } else {
            self.items.push((n.to_string(), value.to_string(), level));
        }
    }
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let (n, _) = split_inherit(name);
        let pos = self.items.iter().position(|(k, _, _)| k == n)?;
        Some(self.items.remove(pos).1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items.iter().map(|(k, v, _)| (k.as_str(), v.as_str()))
    }
    /// Variables a child channel inherits, with their new names (`_X` -> `X`, `__X` stays).
    pub fn inheritable(&self) -> Vec<(String, String)> {
        self.items
            .iter()
            .filter_map(|(k, v, l)| match l {
                1 => Some((k.clone(), v.clone())),
                2 => Some((format!("__{k}"), v.clone())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inheritance_levels() {
        let mut v = Vars::default();
        v.set("_ONCE", "1");
        v.set("__ALWAYS", "2");
        v.set("LOCALONLY", "3");
        assert_eq!(v.get("ONCE"), Some("1"));
        assert_eq!(v.get("_ONCE"), Some("1"));
        let inh = v.inheritable();
        assert_eq!(
            inh,
            vec![
                ("ONCE".to_string(), "1".to_string()),
                ("__ALWAYS".to_string(), "2".to_string())
            ]
        );
        let mut child = Vars::default();
        for (k, val) in &inh {
            child.set(k, val);
        }
        assert_eq!(
            child.inheritable(),
            vec![("__ALWAYS".to_string(), "2".to_string())]
        );
    }
}
