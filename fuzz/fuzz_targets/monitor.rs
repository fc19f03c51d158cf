//! `monitor.yaml` comes from Git. Parsing never panics, and an accepted config sends
//! webhooks only to http(s) URLs on hosts its allow-list names.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = cairn_monitor::rules::MonitorConfig::parse(text, "monitor.yaml") {
        assert!(config.evaluate_every >= 100);
        for hook in &config.webhooks {
            let url = url::Url::parse(&hook.url).expect("an accepted webhook URL parses");
            assert!(matches!(url.scheme(), "http" | "https"));
            if let Some(allowed) = &config.webhook_hosts {
                let host = url.host_str().expect("an accepted webhook URL has a host");
                assert!(cairn_monitor::rules::host_allowed(host, allowed), "{host}");
            }
        }
    }
});
