//! The one ordered parallel pipeline: `work` on every item, spread over worker threads, each result handed
//! to a consumer in item order. At most `capacity` items are started ahead of the consumer (in progress or
//! done and waiting), so memory stays bounded even behind one slow item; the workers wait instead. Used to
//! decode images ahead of the model. Hand-written because rayon's parallel iterators have no bounded
//! in-order streaming; for bulk work collected whole (decoding a training set once) use rayon.
use std::collections::BTreeMap;
use std::sync::{mpsc, Condvar, Mutex};

/// How far the workers have got, shared under one lock.
struct Window {
    /// The next item to start.
    next: usize,
    /// Items handed to the consumer so far.
    consumed: usize,
    /// The consumer failed: start nothing more.
    stopped: bool,
}

/// Runs `work` on `items` on `workers` threads and calls `consume(index, result)` in index order, with at
/// most `capacity` items started and not yet consumed. The consumer's first error stops the workers and
/// is returned.
pub fn ordered<T, U, F, C>(items: &[T], workers: usize, capacity: usize, work: F, mut consume: C) -> anyhow::Result<()>
where
    T: Sync,
    U: Send,
    F: Fn(&T) -> U + Sync,
    C: FnMut(usize, U) -> anyhow::Result<()>,
{
    let capacity = capacity.max(1);
    let window = Mutex::new(Window { next: 0, consumed: 0, stopped: false });
    let moved = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, U)>();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (window, moved, work) = (&window, &moved, &work);
            scope.spawn(move || loop {
                let index = {
                    let mut w = window.lock().expect("pipeline lock");
                    while !w.stopped && w.next < items.len() && w.next >= w.consumed + capacity {
                        w = moved.wait(w).expect("pipeline lock");
                    }
                    if w.stopped || w.next >= items.len() {
                        break;
                    }
                    w.next += 1;
                    w.next - 1
                };
                if tx.send((index, work(&items[index]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut deliver = || -> anyhow::Result<()> {
            // Workers finish out of order; early arrivals wait here, within the window.
            let mut waiting = BTreeMap::new();
            let mut want = 0;
            for (index, result) in &rx {
                waiting.insert(index, result);
                while let Some(result) = waiting.remove(&want) {
                    consume(want, result)?;
                    want += 1;
                    window.lock().expect("pipeline lock").consumed = want;
                    moved.notify_all();
                }
            }
            Ok(())
        };
        let result = deliver();
        window.lock().expect("pipeline lock").stopped = true;
        moved.notify_all();
        result
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn results_arrive_in_order_and_a_slow_item_holds_back_at_most_the_window() {
        let items: Vec<usize> = (0..200).collect();
        let capacity = 8;
        let started = AtomicUsize::new(0);
        let consumed = AtomicUsize::new(0);
        let most_ahead = AtomicUsize::new(0);
        let mut seen = Vec::new();
        ordered(
            &items,
            4,
            capacity,
            |&i| {
                let ahead = started.fetch_add(1, Ordering::SeqCst) + 1 - consumed.load(Ordering::SeqCst);
                most_ahead.fetch_max(ahead, Ordering::SeqCst);
                // Item 0 is slow: without the window the others would all finish and pile up behind it.
                std::thread::sleep(Duration::from_millis(if i == 0 { 200 } else { 1 }));
                i * 10
            },
            |index, value| {
                assert_eq!(value, index * 10);
                seen.push(index);
                consumed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, items);
        let ahead = most_ahead.load(Ordering::SeqCst);
        assert!(ahead <= capacity, "{ahead} items were started ahead of the consumer; the window is {capacity}");
    }

    #[test]
    fn a_consumer_error_stops_the_workers_and_is_returned() {
        let items: Vec<usize> = (0..10_000).collect();
        let worked = AtomicUsize::new(0);
        let err = ordered(
            &items,
            3,
            4,
            |&i| {
                worked.fetch_add(1, Ordering::SeqCst);
                i
            },
            |index, _| if index == 5 { anyhow::bail!("stop at {index}") } else { Ok(()) },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "stop at 5");
        assert!(worked.load(Ordering::SeqCst) < 100, "workers went on after the error");
    }

    #[test]
    fn no_items_and_more_workers_than_items() {
        ordered(&[] as &[u8], 4, 2, |_| (), |_, _| unreachable!()).unwrap();
        let mut got = Vec::new();
        ordered(
            &[1, 2],
            16,
            1,
            |&x| x,
            |_, x| {
                got.push(x);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, [1, 2]);
    }
}
