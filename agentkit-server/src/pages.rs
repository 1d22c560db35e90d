//! Reading a store collection to its end, page by page.
//!
//! [`Store::doc_list`] returns at most `limit` documents; a loop that reads one page and stops
//! silently drops the rest once a collection outgrows it. [`DocPages`] follows the `after`
//! cursor until a short page, so every scan in the server sees every document, while holding
//! one page in memory at a time.

use agentkit_core::Result;
use agentkit_runtime::{Doc, Store};

/// How many documents a scan reads per store call.
pub(crate) const PAGE: usize = 500;

/// The pages of the documents of one collection under one id prefix, in id order.
pub(crate) struct DocPages<'a> {
    store: &'a dyn Store,
    collection: &'a str,
    prefix: &'a str,
    after: Option<String>,
    page: usize,
    done: bool,
}

impl<'a> DocPages<'a> {
    /// The documents of `collection` whose id starts with `prefix`, [`PAGE`] at a time.
    pub(crate) fn new(store: &'a dyn Store, collection: &'a str, prefix: &'a str) -> Self {
        Self {
            store,
            collection,
            prefix,
            after: None,
            page: PAGE,
            done: false,
        }
    }

    /// Read `page` documents per store call (at least 1).
    #[must_use]
    pub(crate) fn with_page(mut self, page: usize) -> Self {
        self.page = page.max(1);
        self
    }

    /// The next page (never empty), or `None` after the last document.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Doc>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .doc_list(
                self.collection,
                self.prefix,
                self.after.as_deref(),
                self.page,
            )
            .await?;
        // A short page is the last one: no second call to learn that nothing follows.
        self.done = page.len() < self.page;
        match page.last() {
            Some(last) => self.after = Some(last.id.clone()),
            None => return Ok(None),
        }
        Ok(Some(page))
    }

    /// Every remaining document (all in memory: for collections a caller bounds itself).
    pub(crate) async fn all(mut self) -> Result<Vec<Doc>> {
        let mut out = Vec::new();
        while let Some(page) = self.next().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use agentkit_runtime::{DocStore, Expect, MemoryStore};

    async fn store_with(n: usize) -> MemoryStore {
        let store = MemoryStore::new();
        for i in 0..n {
            store
                .doc_put("c", &format!("p/{i:03}"), serde_json::json!(i), Expect::Any)
                .await
                .unwrap();
        }
        // A neighbour the prefix excludes.
        store
            .doc_put("c", "q/000", serde_json::json!(0), Expect::Any)
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn every_document_is_read_at_and_around_the_page_boundary() {
        for n in [0, 1, 2, 3, 4, 5, 7] {
            let store = store_with(n).await;
            let mut pages = DocPages::new(&store, "c", "p/").with_page(2);
            let mut ids = Vec::new();
            let mut calls = 0;
            while let Some(page) = pages.next().await.unwrap() {
                assert!(!page.is_empty() && page.len() <= 2);
                calls += 1;
                ids.extend(page.into_iter().map(|d| d.id));
            }
            let want: Vec<String> = (0..n).map(|i| format!("p/{i:03}")).collect();
            assert_eq!(ids, want, "{n} documents");
            assert_eq!(calls, n.div_ceil(2), "{n} documents: pages");
            let all = DocPages::new(&store, "c", "p/")
                .with_page(2)
                .all()
                .await
                .unwrap();
            assert_eq!(all.len(), n);
        }
    }
}
