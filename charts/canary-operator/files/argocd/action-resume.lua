-- Argo CD action "resume": sets the annotation canary.dev/resume, which canary-operator decides and
-- then removes (docs/cli.md). The value is the JSON the canary CLI writes; its timestamp makes
-- every use a new command.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canary.dev/resume"] = '{"at": "' .. os.date("!%Y-%m-%dT%H:%M:%SZ") .. '", "by": "argocd", "reason": "resume from Argo CD"}'
return obj
