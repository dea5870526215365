//! `evalstream bench --suite dispatch`: what calling a processor through `Box<dyn Processor>`
//! (how the binary runs registered processors) costs next to calling it directly (how the engine
//! is monomorphised for one concrete type), on the record path the engine drives: `process` on a
//! decoded input (typed decode, typed state get/put, typed output), then the output's encoding.
//! In process, no broker: the difference is the indirect calls, nothing else.

use std::time::Instant;

use evalstream_runtime::codec::Codec;
use evalstream_runtime::processor::{Context, Input, Processor};
use evalstream_runtime::state::StateView;
use evalstream_totals::{Totals, TotalsInput, INPUT};

use super::{median, Args};

/// Runs both, alternating, and prints ns/record and the ratio of medians.
pub(super) fn dispatch_cost(codec: &Codec, args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let n = args.records().clamp(1, 1_000_000);
    let inputs: Vec<_> = (0..n)
        .map(|i| {
            let value = TotalsInput {
                key: format!("key-{}", i % 10_000),
                amount: (i % 100) as i64,
                payload: String::new(),
            };
            codec.encode_record(INPUT, &value).map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut direct = Vec::new();
    let mut boxed = Vec::new();
    let mut concrete = Totals;
    let mut dynamic: Box<dyn Processor> = Box::new(Totals);
    for run in 0..args.runs {
        let d = per_record(&mut concrete, codec, &inputs)?;
        let b = per_record(&mut dynamic, codec, &inputs)?;
        eprintln!("run {}: direct {d:.0} ns/record, Box<dyn Processor> {b:.0} ns/record", run + 1);
        direct.push(d);
        boxed.push(b);
    }
    let (d, b) = (median(&direct), median(&boxed));
    println!("process + encode, {n} records per run, {} runs", args.runs);
    println!("direct (generic)      median {d:.0} ns/record");
    println!("Box<dyn Processor>    median {b:.0} ns/record");
    println!("ratio                 {:.3}", b / d);
    Ok(std::process::ExitCode::SUCCESS)
}

/// ns per record of framing the input, `process` and encoding its outputs, as the engine does
/// per record.
fn per_record<P: Processor>(p: &mut P, codec: &Codec, inputs: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut state = StateView::new();
    let mut bytes = 0usize;
    let started = Instant::now();
    for (offset, record) in inputs.iter().enumerate() {
        let framed = codec.frame(record)?;
        let input = Input::framed(INPUT, 0, offset as i64, &framed);
        let mut ctx = Context::new(&mut state);
        p.process(&input, &mut ctx)?;
        for out in ctx.take_outputs() {
            bytes += out.encode(codec, &out.topic)?.len();
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(bytes > 0, "no output was encoded");
    Ok(elapsed.as_nanos() as f64 / inputs.len() as f64)
}
