//! Real-world squid.conf files (`tests/squid_corpus/`, sources in its SOURCES.md): every
//! file Squid 5.7 accepts that proxyfleet reads today must keep reading
//! (`proxyfleet proxy --check`, the real binary), and the test prints how many of the
//! Squid-accepted files start, with the first error of each that does not (the work left).

use std::path::Path;
use std::process::Command;

/// The files that read today: a change that breaks one of them fails here.
const READ_TODAY: &[&str] = &[
    "001-128technology-salt-states.conf",
    "002-13pgeiser-docker.conf",
    "003-39ff-docker-squid-mysql.conf",
    "004-4km3-docker-alpine-squid.conf",
    "005-a3linux-homeproxy-docker.conf",
    "006-aaronsw-tor2web.conf",
    "007-AdamMaltby-squidward.conf",
    "008-AkihiroKida-aws-cloudformation-verify.conf",
    "010-AlekseyMartynov-squid.conf",
    "011-Althy-squid-conf.conf",
    "012-andrassebo-squid-adblock.conf",
    "014-AnuragUtkarsh-enterprise-squid-proxy.conf",
    "015-avillalba96-docker-squidproxy.conf",
    "016-bborbe-docker-squid.conf",
    "017-Bohnenbaum-squid-config.conf",
    "018-BostjanPisler-squid-proxy.conf",
    "019-chadgeary-squid-cluster.conf",
    "020-cloud-gov-space-egress-examples.conf",
    "021-CottonPajamas-aws-custom-startup-scripts.conf",
    "023-cqkxboy168-squid_videocache.conf",
    "024-cropalato-squid-vault-auth.conf",
    "025-csullivannet-open-proxy.conf",
    "026-duanhongyi-squid.conf",
    "028-fabriziosalmi-secure-proxy-manager.conf",
    "029-FriedrichMatheus-proxy-auth.conf",
    "030-goneri-rpm-mirror-container.conf",
    "031-GoogleCloudPlatform-terraform-google-nat-gateway.conf",
    "032-hardenchant-squid-proxy.conf",
    "033-hasgeek-confrouter.conf",
    "034-hellono21-squid-auth.conf",
    "035-hongkongkiwi-openwrt-squid.conf",
    "036-htamakos-terraform-communicator-ssh-test-env.conf",
    "037-ip6li-vpn-gateway.conf",
    "038-IuriSalla-squid-sarg-configuration.conf",
    "039-jeffalder-infinite-tracing-proxy.conf",
    "040-jenkinsci-anka-build-plugin.conf",
    "041-jeremyeder-squid.conf",
    "042-JetBrains-phpstorm-docker-images.conf",
    "043-jimmywanhk-aws-cdk-squid-proxy.conf",
    "044-jlevesy-k3s-offline.conf",
    "045-Jupiter0428-squid-stunnel.conf",
    "046-kbrwn-rkt-squid.conf",
    "047-kdlan-my-dockerfile.conf",
    "049-konstruktoid-container-squid-build.conf",
    "050-kpcyrd-jenkins-debian.conf",
    "052-major1201-dockerfiles.conf",
    "053-MaximilianoBz-squid-ldap.conf",
    "054-MDaniel592-Kubernetes.conf",
    "055-MiCHiLU-docker-compose.conf",
    "056-Mooan-experiment-proxy-chain.conf",
    "057-nerdtux-servidor-de-internet-linux.conf",
    "058-NHSDigital-mesh-client.conf",
    "060-oakcask-docker-squid-rpm-proxy.conf",
    "061-peter-murray-workflow-application-token-action.conf",
    "062-rdoxenham-openshift-virt-labs.conf",
    "063-request-request.conf",
    "065-serphacker-webace.conf",
    "066-SFSLiveBoot-50-squid-sfs.conf",
    "068-Stono-devenv.conf",
    "069-StuAtKong-kongpose.conf",
    "071-titidnh-hassio-addons.conf",
    "072-TomWis97-spotprox.conf",
    "073-tywtyw2002-unblockyouku_docker.conf",
    "075-UKHomeOffice-development_environment.conf",
    "076-VerosK-ncip-squid-docker.conf",
    "077-vish6760-airgap.conf",
    "079-wandb-llm-leaderboard.conf",
    "080-yuzumone-pibook.conf",
];

fn squid_accepted(sources: &str) -> Vec<String> {
    sources
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim);
            let _ = cells.next();
            let file = cells.next()?;
            let squid = cells.nth(3)?;
            (file.ends_with(".conf") && squid.starts_with("accepted")).then(|| file.to_string())
        })
        .collect()
}

#[test]
fn the_corpus_files_squid_accepts_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/squid_corpus");
    let sources = std::fs::read_to_string(dir.join("SOURCES.md")).expect("SOURCES.md");
    let accepted = squid_accepted(&sources);
    assert_eq!(
        accepted.len(),
        70,
        "SOURCES.md lists 70 files Squid 5.7 accepts"
    );
    let mut read = 0;
    let mut failures = Vec::new();
    for file in &accepted {
        let out = Command::new(env!("CARGO_BIN_EXE_proxyfleet"))
            .args(["proxy", "--check", "-f"])
            .arg(dir.join(file))
            .output()
            .expect("run proxyfleet");
        if out.status.success() {
            read += 1;
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .rfind(|l| !l.contains("WARN"))
                .unwrap_or_default()
                .to_string();
            failures.push((file.clone(), first));
        }
    }
    println!("{read} of {} Squid-accepted files read", accepted.len());
    for (file, error) in &failures {
        println!("  {file}: {error}");
    }
    for file in READ_TODAY {
        assert!(
            !failures.iter().any(|(f, _)| f == file),
            "{file} read before and does not now: {failures:?}"
        );
        assert!(
            accepted.iter().any(|f| f == file),
            "{file} is not a Squid-accepted file"
        );
    }
}
