// Package export pushes the metering ledger's sealed usage records to a
// billing endpoint over HTTP, as Stripe billing meter events (one form POST
// per record, identifier = record ID) or as CloudEvents batches the way
// OpenMeter ingests them. Delivery is at least once: records go out in Seq
// order, the persisted cursor advances only once the endpoint has accepted a
// record (or it is dead-lettered or skipped, both logged and counted), and
// failures are retried with jittered exponential backoff without ever
// skipping ahead, so after a crash the same IDs are sent again and the
// receiver deduplicates them.
package export
