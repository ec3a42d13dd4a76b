//! Reading `qstat -xml` (Grid Engine 8.1). Every job row is a `job_list`
//! element, running ones under `queue_info` (one row per running array
//! task, `tasks` its id), pending ones under `job_info` (one row per
//! array with the pending task ids as a range: `3,4` or `5-10:1`). qstat
//! lists unfinished jobs only: a finished job is simply absent.
//!
//! Read as a stream of events with quick-xml, keeping only the fields
//! needed and ignoring everything else, so other fields, namespaces or a
//! different nesting of the two sections do not matter.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::batch::array::ListedJob;
use crate::batch::slurm::parse_task_ids;

/// One `job_list` row: a job, a running array task, or an array's pending
/// tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridEngineJob {
    pub job_id: u64,
    pub name: String,
    /// Grid Engine's state letters: `qw`, `hqw`, `r`, `t`, `Eqw`, `dr`, …
    pub state: String,
    /// The array task ids of this row (`1`, `3,4`, `5-10:1`); `None` for
    /// a job that is not an array.
    pub tasks: Option<String>,
}

impl GridEngineJob {
    /// Whether this row is (or, pending, includes) task `task` (1-based,
    /// as `$SGE_TASK_ID`) of array job `array_job`.
    pub fn is_task(&self, array_job: &str, task: u32) -> bool {
        if self.job_id.to_string() != array_job {
            return false;
        }
        self.tasks
            .as_deref()
            .and_then(parse_task_ids)
            .is_some_and(|ids| ids.contains(&task))
    }

    /// Held in the error state (`Eqw`): it will not run until a manager
    /// clears it or it is deleted.
    pub fn is_error(&self) -> bool {
        self.state.contains('E')
    }

    /// `job` or `job.tasks`, as qstat and qdel write them.
    pub fn display_id(&self) -> String {
        match &self.tasks {
            Some(t) => format!("{}.{t}", self.job_id),
            None => self.job_id.to_string(),
        }
    }
}

impl ListedJob for GridEngineJob {
    fn submitted_id(&self) -> String {
        self.job_id.to_string()
    }

    /// Always: qstat lists unfinished jobs only.
    fn is_live(&self) -> bool {
        true
    }

    /// Task `index + 1`: Grid Engine's task ids start at 1.
    fn is_element(&self, array_job: &str, index: usize) -> bool {
        index
            .checked_add(1)
            .and_then(|t| u32::try_from(t).ok())
            .is_some_and(|task| self.is_task(array_job, task))
    }

    fn display_id(&self) -> String {
        GridEngineJob::display_id(self)
    }

    fn state(&self) -> &str {
        &self.state
    }
}

/// The field of a `job_list` being read.
#[derive(Clone, Copy)]
enum Field {
    Number,
    Name,
    State,
    Tasks,
}

#[derive(Default)]
struct Row {
    number: Option<String>,
    name: String,
    state: String,
    tasks: Option<String>,
}

/// The rows of `qstat -xml`.
pub(crate) fn parse_qstat_xml(text: &str) -> Result<Vec<GridEngineJob>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("qstat -xml: unexpected output: {e}");
    let mut reader = Reader::from_str(text);
    let mut jobs = Vec::new();
    let mut row: Option<Row> = None;
    let mut field: Option<Field> = None;
    let mut saw_root = false;
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                let name = e.name();
                let local = name.local_name();
                match local.as_ref() {
                    b"job_info" => saw_root = true,
                    b"job_list" => row = Some(Row::default()),
                    b"JB_job_number" => field = Some(Field::Number),
                    b"JB_name" => field = Some(Field::Name),
                    b"state" => field = Some(Field::State),
                    b"tasks" => field = Some(Field::Tasks),
                    _ => field = None,
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| bad(&e))?;
                append(&mut row, field, &text);
            }
            Event::GeneralRef(r) => {
                // An entity in a job name (`&amp;`): its character.
                let name = r.decode().map_err(|e| bad(&e))?;
                let ch = quick_xml::escape::resolve_predefined_entity(&name)
                    .map(str::to_string)
                    .or_else(|| r.resolve_char_ref().ok().flatten().map(String::from))
                    .ok_or_else(|| bad(&format!("unknown entity &{name};")))?;
                append(&mut row, field, &ch);
            }
            Event::End(e) => {
                field = None;
                if e.name().local_name().as_ref() == b"job_list" {
                    let r = row
                        .take()
                        .ok_or_else(|| bad(&"</job_list> without <job_list>"))?;
                    jobs.push(finish(r).map_err(|e| bad(&e))?);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(bad(&"no <job_info> element"));
    }
    Ok(jobs)
}

fn append(row: &mut Option<Row>, field: Option<Field>, text: &str) {
    let (Some(r), Some(f)) = (row.as_mut(), field) else {
        return;
    };
    match f {
        Field::Number => r.number.get_or_insert_with(String::new).push_str(text),
        Field::Name => r.name.push_str(text),
        Field::State => r.state.push_str(text),
        Field::Tasks => r.tasks.get_or_insert_with(String::new).push_str(text),
    }
}

fn finish(r: Row) -> Result<GridEngineJob, String> {
    let number = r.number.unwrap_or_default();
    let job_id = number
        .trim()
        .parse()
        .map_err(|_| format!("job number {number:?} is not a number"))?;
    Ok(GridEngineJob {
        job_id,
        name: r.name.trim().to_string(),
        state: r.state.trim().to_string(),
        tasks: r
            .tasks
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    })
}
