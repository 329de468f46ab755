"""WfFormat traces (WfCommons, WfInstances) as stormproof workflows, for plan, simulate and run.

A WfFormat instance records a real execution of a workflow: its DAG and, per
task, the runtime, cores and memory it had. Imported, each task keeps its
traced runtime as ``estimated_runtime`` (what ``plan`` and simulations use)
and gets a stand-in command that sleeps that runtime times a *time factor*,
so a real ``stormproof run`` replays the workflow's shape in seconds. The
original id, name and command are kept as labels.

The conversion is pure, document in and workflow document out
(``convert.convert``); reading the file and writing the YAML live elsewhere
(``importers.files``, ``importers.render``). One module per step, each small
enough to read in one sitting:

* ``convert``: the one door (``convert``), what it returns, the written file's header;
* ``options``: what the user chose on the command line, and the defaults;
* ``trace``: a task as read, the problems found, how values are quoted in them;
* ``reading``: both layouts of the format (1.5 and later, up to 1.4) into ``TracedTask``s;
* ``graph``: identities, references resolved to edges, the dependency order, cycles;
* ``task_documents``: runtimes filled in, stormproof ids and task documents written.
"""
