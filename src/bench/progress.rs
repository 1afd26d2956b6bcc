//! A progress bar on stderr, redrawn a few times a second while a benchmark
//! runs (only when stderr is a terminal; otherwise a line every few seconds).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_engine::LatencyHistogram;

/// A running progress display.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing. Progress is estimated from delivered batches (every
    /// batch but the last is full).
    pub fn start(
        label: &'static str,
        total: u64,
        delivered: Arc<LatencyHistogram>,
        batch: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last_line = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let done = (delivered.count() * batch as u64).min(total);
                let frac = if total == 0 {
                    1.0
                } else {
                    done as f64 / total as f64
                };
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                if tty {
                    let filled = (frac * 30.0) as usize;
                    eprint!(
                        "\r{label} [{}{}] {:>5.1}%  {:.2} M events/s ",
                        "#".repeat(filled),
                        " ".repeat(30 - filled),
                        frac * 100.0,
                        rate / 1e6
                    );
                    let _ = std::io::stderr().flush();
                } else if last_line.elapsed() >= Duration::from_secs(3) {
                    eprintln!("{label}: {:.1}% {:.2} M events/s", frac * 100.0, rate / 1e6);
                    last_line = Instant::now();
                }
            }
            if tty {
                eprintln!("\r{label} [{}] 100.0%", "#".repeat(30));
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops drawing.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
