//! The `kv` table's rows for other components (push groups, runs, the
//! notifier's state), written in durable transactions.

use super::*;

impl Storage {
    /// Stores `value` under `(namespace, key)`, durably.
    pub fn kv_put(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.kv_write(|t| {
            t.insert((namespace, key), value)?;
            Ok(())
        })
    }

    pub fn kv_delete(&self, namespace: &str, key: &[u8]) -> Result<(), StorageError> {
        self.kv_write(|t| {
            t.remove((namespace, key))?;
            Ok(())
        })
    }

    /// Puts (`Some`) and deletes (`None`) rows of a namespace in one
    /// durable transaction.
    pub fn kv_apply(
        &self,
        namespace: &str,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        self.kv_write(|t| {
            for (k, v) in changes {
                match v {
                    Some(v) => t.insert((namespace, k.as_slice()), v.as_slice())?,
                    None => t.remove((namespace, k.as_slice()))?,
                };
            }
            Ok(())
        })
    }

    /// Every `(key, value)` of a namespace, in key order.
    pub fn kv_scan(&self, namespace: &str) -> Result<KvRows, StorageError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        scan_namespace(&txn.open_table(KV)?, namespace)
    }

    pub(super) fn kv_write(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &[u8]), &[u8]>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.check_space(DISK_RESERVE / 2)?;
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(KV)?;
            f(&mut table)?;
        }
        txn.commit()?;
        Ok(())
    }
}
