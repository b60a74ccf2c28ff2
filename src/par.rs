//! Splitting independent work across the cores.

/// `f` applied to consecutive parts of `items`, results in order. With
/// `parallel`, there is one part per core (at most 8), each on its own
/// scoped thread; otherwise `f` runs once, on all items, on this thread.
pub fn map_parts<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let threads = if parallel {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    if threads <= 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_parts;

    #[test]
    fn parts_come_back_in_order_and_cover_everything() {
        let items: Vec<u32> = (0..1001).collect();
        for parallel in [false, true] {
            let parts = map_parts(&items, parallel, |p| p.to_vec());
            assert_eq!(parts.concat(), items);
        }
        assert_eq!(map_parts(&[] as &[u32], true, |p| p.len()), vec![0]);
    }
}
