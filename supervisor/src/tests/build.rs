use std::path::PathBuf;
use std::sync::Mutex;

use super::*;
use crate::Adoption;
use crate::fake::Script;
use crate::spec::Build;

/// A context folder that removes itself.
struct Context(PathBuf);

impl Context {
    fn new(tag: &str) -> Context {
        let dir = std::env::temp_dir().join(format!("moat-build-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("Dockerfile"), "FROM scorer:v1\nENV VERSION=built\n").expect("write");
        Context(dir.canonicalize().expect("real path"))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn built(context: &Context) -> DeploymentSpec {
    let build = Build { context: context.0.clone(), dockerfile: "Dockerfile".into() };
    DeploymentSpec { image: String::new(), build: Some(build), ..spec(1, "v1") }
}

/// Records the image of every container made.
fn images_run(fake: &Fake) -> Arc<Mutex<Vec<String>>> {
    let images = Arc::new(Mutex::new(Vec::new()));
    let seen = images.clone();
    fake.script(move |new| {
        seen.lock().expect("lock").push(new.image.clone());
        Script::default()
    });
    images
}

fn builds(fake: &Fake) -> Vec<String> {
    fake.calls().into_iter().filter(|c| c.starts_with("build ")).collect()
}

#[tokio::test(start_paused = true)]
async fn an_image_is_built_once_per_context_and_reused_while_the_context_is_unchanged() {
    let context = Context::new("reuse");
    let fake = Fake::new();
    let images = images_run(&fake);
    let s = supervisor(&fake).await;
    let mut progress = s.progress();
    s.apply(built(&context), Adoption::Trusted).await.expect("built and applied");
    let [tag] = fake.built().try_into().expect("one image built");
    assert!(tag.starts_with("moat-0a1b2c3d-ep-blue:"), "{tag}");
    assert_eq!(*images.lock().expect("lock"), std::slice::from_ref(&tag));
    assert_eq!(
        progress.try_recv().expect("progress").message,
        format!("building image {tag} from {}", context.0.display())
    );
    assert!(progress.try_recv().expect("a build line").message.starts_with("build: Step 1/2"));
    let log = s.initializer_log(&id(), 100).expect("a log");
    assert!(log.contains(&format!("Successfully tagged {tag}")), "{log}");

    // The same context again (a restarted daemon, an unchanged update): no build, same containers.
    s.apply(built(&context), Adoption::Trusted).await.expect("applied again");
    assert_eq!(builds(&fake).len(), 1, "{:?}", fake.calls());
    assert!(
        s.initializer_log(&id(), 100).expect("a log").contains("built from this context before; reusing it")
    );
    assert_eq!(images.lock().expect("lock").len(), 1, "no instance was replaced");

    // A changed file builds anew, rolls the instance and drops the older image.
    std::fs::write(context.0.join("Dockerfile"), "FROM scorer:v1\nENV VERSION=changed\n").expect("edit");
    s.apply(built(&context), Adoption::Trusted).await.expect("rebuilt");
    let [newer] = fake.built().try_into().expect("only the image in use is kept");
    assert_ne!(newer, tag);
    assert_eq!(*images.lock().expect("lock"), [tag.clone(), newer.clone()]);
    assert!(fake.calls().contains(&format!("remove-image {tag}")), "{:?}", fake.calls());

    // Removal takes the image and the log with the deployment.
    s.remove(&id()).await.expect("removed");
    assert!(fake.built().is_empty());
    assert_eq!(s.initializer_log(&id(), 100), None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_build_fails_the_apply_with_the_builders_last_lines_and_keeps_its_log() {
    let context = Context::new("fail");
    let fake = Fake::new();
    fake.fail_builds(Some("COPY failed: file not found in build context"));
    let s = supervisor(&fake).await;
    let e = s.apply(built(&context), Adoption::Trusted).await.expect_err("fails");
    assert!(e.reason.starts_with("cannot build image moat-0a1b2c3d-ep-blue:"), "{}", e.reason);
    assert!(e.reason.ends_with("COPY failed: file not found in build context"), "{}", e.reason);
    assert!(e.logs.starts_with("Step 1/2 : FROM base"), "{}", e.logs);
    assert!(fake.containers().is_empty() && fake.built().is_empty());
    let log = s.initializer_log(&id(), 100).expect("the log outlives the failed deployment");
    assert!(log.contains("build: Step 1/2"), "{log}");

    fake.fail_builds(None);
    s.apply(built(&context), Adoption::Trusted).await.expect("a fixed builder builds");
    assert_eq!(fake.running(), [name(0)]);
}

#[tokio::test(start_paused = true)]
async fn a_build_runs_on_the_deployments_network_with_its_proxy_as_build_arguments() {
    let context = Context::new("proxy");
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    let mut spec = built(&context);
    spec.private = true;
    spec.env.push(("HTTPS_PROXY".into(), "http://172.30.0.1:3128".into()));
    spec.env.push(("SECRET_SETTING".into(), "not a build argument".into()));
    s.apply(spec.clone(), Adoption::Trusted).await.expect("applied");
    let network = crate::names::network("0a1b2c3d", &id());
    let [call] = builds(&fake).try_into().expect("one build");
    assert!(call.ends_with(&format!(" on {network} args [HTTPS_PROXY=http://172.30.0.1:3128]")), "{call}");

    // Another proxy is another build: what a step reaches shapes what it makes.
    spec.env[1].1 = "http://172.30.0.1:3129".into();
    s.apply(spec, Adoption::Trusted).await.expect("applied");
    assert_eq!(builds(&fake).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_context_that_is_not_a_plain_folder_fails_the_apply_by_name() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    let build = Build { context: PathBuf::from("/proc/self"), dockerfile: "Dockerfile".into() };
    let e = s
        .apply(
            DeploymentSpec { image: String::new(), build: Some(build), ..spec(1, "v1") },
            Adoption::Trusted,
        )
        .await
        .expect_err("refused");
    assert!(e.reason.starts_with("cannot read the build context /proc/self: "), "{}", e.reason);
    assert!(builds(&fake).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_removes_the_images_of_deleted_deployments() {
    let context = Context::new("others");
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(built(&context), Adoption::Trusted).await.expect("applied");
    s.remove_others(&[id()].into()).await.expect("kept");
    assert_eq!(fake.built().len(), 1, "a kept deployment keeps its image");
    s.remove_others(&std::collections::HashSet::new()).await.expect("swept");
    assert!(fake.built().is_empty() && fake.containers().is_empty());
}
