//! The daemon's live event stream: each change a poll stored (with the rules it matched and the
//! destinations it was queued for) and each delivery attempt's outcome. Nobody watches a running
//! notifier unless its caller asks to; the `demo` command does.
//!
//! The two kinds are told by different stages (the deliverer cannot name a daemon type), so each
//! has its own queue, and one [`Subscription`] hands both out in the order that matters: a change
//! always comes before the deliveries it caused.

use crate::daemon::intake::PollEvent;
use crate::deliver;
use tokio::sync::mpsc;

/// Something a running notifier did. Ids and names only, never record contents.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A poll stored a change and queued its deliveries.
    Change(PollEvent),
    /// A delivery attempt ended: delivered, to be retried, or dead.
    Delivery(deliver::Event),
}

/// The sending side of a watched notifier's events, handed to the engine (cheap to clone, kept
/// across reloads). [`Events::none`], the default, watches nothing, and then nothing is sent.
#[derive(Debug, Clone, Default)]
pub struct Events {
    senders: Option<Senders>,
}

#[derive(Debug, Clone)]
struct Senders {
    changes: mpsc::UnboundedSender<PollEvent>,
    deliveries: mpsc::UnboundedSender<deliver::Event>,
}

/// The receiving side: every event of the notifier its [`Events`] went to.
#[derive(Debug)]
pub(crate) struct Subscription {
    changes: mpsc::UnboundedReceiver<PollEvent>,
    deliveries: mpsc::UnboundedReceiver<deliver::Event>,
}

impl Events {
    /// Nobody watches.
    pub fn none() -> Events {
        Events::default()
    }

    /// Events to hand to the notifier, and the subscription that receives them.
    pub(crate) fn channel() -> (Events, Subscription) {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (deliveries, deliveries_rx) = mpsc::unbounded_channel();
        (
            Events {
                senders: Some(Senders {
                    changes,
                    deliveries,
                }),
            },
            Subscription {
                changes: changes_rx,
                deliveries: deliveries_rx,
            },
        )
    }

    /// Where polls tell of the changes they stored, when someone watches.
    pub(crate) fn changes(&self) -> Option<mpsc::UnboundedSender<PollEvent>> {
        self.senders.as_ref().map(|s| s.changes.clone())
    }

    /// Where the deliverer tells of its attempts, when someone watches.
    pub(crate) fn deliveries(&self) -> Option<mpsc::UnboundedSender<deliver::Event>> {
        self.senders.as_ref().map(|s| s.deliveries.clone())
    }
}

impl Subscription {
    /// The next event, or `None` once the notifier has stopped and every event was handed out.
    ///
    /// A change is sent before the workers are woken to deliver it, so taking waiting changes
    /// first is enough for a change to come before every delivery event of its own.
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            Some(c) = self.changes.recv() => Some(Event::Change(c)),
            Some(d) = self.deliveries.recv() => Some(Event::Delivery(d)),
            else => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;

    fn change(id: &str) -> PollEvent {
        PollEvent {
            clinic: "default".into(),
            resource: "leads".into(),
            kind: ChangeKind::Added,
            id: id.into(),
            change_id: format!("msg_{id}"),
            rules: vec!["r".into()],
            destinations: vec!["hook".into()],
        }
    }

    fn dead(id: &str) -> deliver::Event {
        deliver::Event::Dead {
            destination: "hook".into(),
            webhook_id: format!("msg_{id}"),
            reason: "gone".into(),
        }
    }

    #[tokio::test]
    async fn a_waiting_change_comes_before_a_delivery_and_the_stream_ends_with_its_senders() {
        let (events, mut sub) = Events::channel();
        let (changes, deliveries) = (events.changes().unwrap(), events.deliveries().unwrap());
        // The delivery is queued first, yet the change that was already waiting is handed out
        // first: a delivery event never overtakes a change sent before it.
        deliveries.send(dead("1")).unwrap();
        changes.send(change("1")).unwrap();
        assert_eq!(sub.recv().await, Some(Event::Change(change("1"))));
        assert_eq!(sub.recv().await, Some(Event::Delivery(dead("1"))));
        // One kind may stop before the other; the other still comes through.
        drop(changes);
        deliveries.send(dead("2")).unwrap();
        assert_eq!(sub.recv().await, Some(Event::Delivery(dead("2"))));
        drop((events, deliveries));
        assert_eq!(sub.recv().await, None);
    }

    #[test]
    fn nobody_watching_means_no_senders() {
        let events = Events::none();
        assert!(events.changes().is_none());
        assert!(events.deliveries().is_none());
    }
}
