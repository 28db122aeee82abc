//! Caps on open SSE connections: in all, and per client address (IPv6 grouped as the rate
//! limiter groups it), so no caller can make the server hold unbounded streams.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use super::EventsError;

/// The open-connection counts, shared by every stream of the process.
#[derive(Debug)]
pub(crate) struct Slots {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    /// Takes a slot for a stream from `ip` (`None`: an in-process caller, counted in the total
    /// only), or says which cap is reached.
    pub(crate) fn take(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionSlot, EventsError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(EventsError::ServerFull);
        }
        if let Some(ip) = ip {
            let n = open.per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(EventsError::TooManyConnections(self.max_per_ip));
            }
            *n += 1;
        }
        open.total += 1;
        Ok(ConnectionSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    /// Streams open now.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.open.lock().map_or(0, |o| o.total)
    }
}

/// One open SSE connection's place under the caps; released when dropped (with its stream).
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<Slots>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = open.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both caps hold, and dropping a slot frees it (the per-address map forgets empty entries).
    #[test]
    fn caps_and_release() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(Some(a)).unwrap();
        let _a2 = slots.take(Some(a)).unwrap();
        assert!(matches!(
            slots.take(Some(a)),
            Err(EventsError::TooManyConnections(2))
        ));
        let _b1 = slots.take(Some(b)).unwrap();
        assert!(matches!(slots.take(None), Err(EventsError::ServerFull)));
        drop(a1);
        assert_eq!(slots.total(), 2);
        let _a3 = slots.take(Some(a)).unwrap();
        assert_eq!(slots.total(), 3);
    }
}
