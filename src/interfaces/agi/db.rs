//! The astdb store: a family/key tree in SQLite (`<data>/astdb.sqlite3`, Asterisk's schema:
//! `astdb(key PRIMARY KEY, value)` with keys `/family/key`). Used by the AGI `DATABASE`
//! commands, the `DB*` dialplan functions and the `database` CLI commands.

use crate::channel::Channel;
use crate::core::Core;
use crate::dialplan::pbx::{FuncDef, FuncRead, FuncWrite};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// astdb errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("astdb: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("astdb: cannot create {0}: {1}")]
    Dir(String, std::io::Error),
}

/// An open astdb.
pub struct AstDb {
    conn: Mutex<Connection>,
}

fn full_key(family: &str, key: &str) -> String {
    format!(
        "/{}/{}",
        family.trim_matches('/'),
        key.trim_start_matches('/')
    )
}

fn prefix_of(family: &str) -> String {
    let f = family.trim_matches('/');
    if f.is_empty() {
        String::new()
    } else {
        format!("/{f}")
    }
}

impl AstDb {
    /// Open (creating) the database file.
    pub fn open(path: &Path) -> Result<AstDb, DbError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Dir(dir.display().to_string(), e))?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn memory() -> Result<AstDb, DbError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<AstDb, DbError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS astdb(key VARCHAR(256), value VARCHAR(256), PRIMARY KEY(key));",
        )?;
        Ok(AstDb {
            conn: Mutex::new(conn),
        })
    }

    pub fn put(&self, family: &str, key: &str, value: &str) -> Result<(), DbError> {
        self.conn.lock().execute(
            "INSERT OR REPLACE INTO astdb (key, value) VALUES (?1, ?2)",
            params![full_key(family, key), value],
        )?;
        Ok(())
    }

    pub fn get(&self, family: &str, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .conn
            .lock()
            .query_row(
                "SELECT value FROM astdb WHERE key=?1",
                params![full_key(family, key)],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Delete one key; true if it existed.
    pub fn del(&self, family: &str, key: &str) -> Result<bool, DbError> {
        let n = self.conn.lock().execute(
            "DELETE FROM astdb WHERE key=?1",
            params![full_key(family, key)],
        )?;
        Ok(n > 0)
    }

    /// Delete a family (and its sub-families) or, with `subtree`, `family/subtree`. Returns the count.
    pub fn deltree(&self, family: &str, subtree: Option<&str>) -> Result<usize, DbError> {
        let mut p = prefix_of(family);
        if let Some(s) = subtree.filter(|s| !s.is_empty()) {
            p = format!("{p}/{}", s.trim_matches('/'));
        }
        let conn = self.conn.lock();
        let n = if p.is_empty() {
            conn.execute("DELETE FROM astdb", [])?
        } else {
            conn.execute(
                "DELETE FROM astdb WHERE key=?1 OR substr(key,1,?2)=?3",
                params![p, (p.len() + 1) as i64, format!("{p}/")],
            )?
        };
        Ok(n)
    }

    /// All `(key, value)` pairs under a family prefix (everything when empty), sorted.
    pub fn show(&self, family: &str) -> Result<Vec<(String, String)>, DbError> {
        let p = prefix_of(family);
        let conn = self.conn.lock();
        let mut st = conn.prepare("SELECT key, value FROM astdb ORDER BY key")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (k, v) = r?;
            if p.is_empty() || k == p || k.starts_with(&format!("{p}/")) {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// The core's astdb, opened on first use.
pub fn astdb(core: &Core) -> Result<Arc<AstDb>, DbError> {
    if let Some(db) = core.ext.get::<AstDb>() {
        return Ok(db);
    }
    static OPEN: Mutex<()> = Mutex::new(());
    let _g = OPEN.lock();
    if let Some(db) = core.ext.get::<AstDb>() {
        return Ok(db);
    }
    let db = Arc::new(AstDb::open(&core.dirs.data.join("astdb.sqlite3"))?);
    core.ext.insert(db.clone());
    Ok(db)
}

/// Split `family/key` at the last `/` (family may contain `/`).
pub fn split_family_key(s: &str) -> Option<(&str, &str)> {
    let s = s.trim();
    let (f, k) = s.rsplit_once('/')?;
    if f.trim_matches('/').is_empty() || k.is_empty() {
        return None;
    }
    Some((f, k))
}

fn db_read(chan: &mut Channel, args: &str) -> Result<String, String> {
    let (f, k) = split_family_key(args).ok_or("DB requires an argument, DB(<family>/<key>)")?;
    let db = astdb(&chan.core).map_err(|e| e.to_string())?;
    match db.get(f, k).map_err(|e| e.to_string())? {
        Some(v) => {
            chan.vars.set("DB_RESULT", &v);
            Ok(v)
        }
        None => Err(String::new()),
    }
}

fn db_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let (f, k) =
        split_family_key(args).ok_or("DB requires an argument, DB(<family>/<key>)=<value>")?;
    astdb(&chan.core)
        .map_err(|e| e.to_string())?
        .put(f, k, value)
        .map_err(|e| e.to_string())
}

fn db_exists(chan: &mut Channel, args: &str) -> Result<String, String> {
    let Some((f, k)) = split_family_key(args) else {
        return Ok("0".into());
    };
    let db = astdb(&chan.core).map_err(|e| e.to_string())?;
    match db.get(f, k).map_err(|e| e.to_string())? {
        Some(v) => {
            chan.vars.set("DB_RESULT", &v);
            Ok("1".into())
        }
        None => Ok("0".into()),
    }
}

fn db_delete(chan: &mut Channel, args: &str) -> Result<String, String> {
    let (f, k) = split_family_key(args)
        .ok_or("DB_DELETE requires an argument, DB_DELETE(<family>/<key>)")?;
    let db = astdb(&chan.core).map_err(|e| e.to_string())?;
    let v = db.get(f, k).map_err(|e| e.to_string())?;
    if v.is_some() {
        db.del(f, k).map_err(|e| e.to_string())?;
    }
    Ok(v.unwrap_or_default())
}

/// The `DB`, `DB_EXISTS` and `DB_DELETE` functions.
pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "DB",
            synopsis: "Read from or write to the Asterisk database",
            read: Some(FuncRead::Sync(db_read)),
            write: Some(FuncWrite::Sync(db_write)),
        },
        FuncDef {
            name: "DB_EXISTS",
            synopsis: "Check to see if a key exists in the Asterisk database",
            read: Some(FuncRead::Sync(db_exists)),
            write: None,
        },
        FuncDef {
            name: "DB_DELETE",
            synopsis: "Return a value from the database and delete it",
            read: Some(FuncRead::Sync(db_delete)),
            write: None,
        },
    ]
}

fn cli_database(core: &Arc<Core>, words: &[String]) -> String {
    let db = match astdb(core) {
        Ok(d) => d,
        Err(e) => return format!("{e}\n"),
    };
    let w = |i: usize| words.get(i).map(|s| s.as_str());
    match (w(0), words.len()) {
        (Some("show"), 1..=3) => {
            let fam = match (w(1), w(2)) {
                (Some(f), Some(k)) => format!("{}/{}", f.trim_matches('/'), k),
                (Some(f), None) => f.to_string(),
                _ => String::new(),
            };
            match db.show(&fam) {
                Ok(rows) => {
                    let mut s = String::new();
                    for (k, v) in &rows {
                        s.push_str(&format!("{:<50}: {:<25}\n", k, v));
                    }
                    s.push_str(&format!("{} results found.\n", rows.len()));
                    s
                }
                Err(e) => format!("{e}\n"),
            }
        }
        (Some("put"), 4) => match db.put(&words[1], &words[2], &words[3]) {
            Ok(()) => "Updated database successfully\n".into(),
            Err(_) => "Failed to update database\n".into(),
        },
        (Some("get"), 3) => match db.get(&words[1], &words[2]) {
            Ok(Some(v)) => format!("Value: {v}\n"),
            _ => "Database entry not found.\n".into(),
        },
        (Some("del"), 3) => match db.del(&words[1], &words[2]) {
            Ok(true) => "Database entry removed.\n".into(),
            _ => "Database entry does not exist.\n".into(),
        },
        (Some("deltree"), 2 | 3) => match db.deltree(&words[1], w(2)) {
            Ok(n) if n > 0 => format!("{n} database entries removed.\n"),
            _ => "Database entries do not exist.\n".into(),
        },
        _ => "Usage: database show|put|get|del|deltree ...\n".into(),
    }
}

/// Register the astdb functions and the `database` CLI commands.
pub fn register(core: &Arc<Core>) {
    crate::dialplan::pbx::register_funcs(core, funcs());
    core.register_cli(
        "database",
        "Usage: database show [family [keytree]] | put <family> <key> <value> | get <family> <key> | del <family> <key> | deltree <family> [keytree]",
        Arc::new(|core: Arc<Core>, words: Vec<String>| Box::pin(async move { cli_database(&core, &words) })),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_del_deltree() {
        let db = AstDb::memory().unwrap();
        db.put("fam", "k1", "v1").unwrap();
        db.put("fam/sub", "k2", "v2").unwrap();
        db.put("family2", "k", "x").unwrap();
        assert_eq!(db.get("fam", "k1").unwrap().as_deref(), Some("v1"));
        assert_eq!(db.get("fam/sub", "k2").unwrap().as_deref(), Some("v2"));
        assert_eq!(db.show("fam").unwrap().len(), 2);
        assert!(db.del("fam", "k1").unwrap());
        assert!(!db.del("fam", "k1").unwrap());
        assert_eq!(db.deltree("fam", None).unwrap(), 1);
        // A sibling family sharing the prefix is untouched.
        assert_eq!(db.get("family2", "k").unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn family_key_split() {
        assert_eq!(split_family_key("a/b/c"), Some(("a/b", "c")));
        assert_eq!(split_family_key("nokey"), None);
        assert_eq!(split_family_key("/k"), None);
    }
}
